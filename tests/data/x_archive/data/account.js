window.YTD.account.part0 = [
  {
    "account" : {
      "email" : "delta@example.invalid",
      "createdVia" : "web",
      "username" : "delta_whiskey",
      "accountId" : "1000001",
      "createdAt" : "2011-06-23T13:04:14.000Z",
      "accountDisplayName" : "Delta Whiskey"
    }
  }
]
