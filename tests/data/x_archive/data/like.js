window.YTD.like.part0 = [
  {
    "like" : {
      "tweetId" : "1649999999999999001",
      "fullText" : "Kettle people: I have been thinking about whistles all week, the high ones and the low ones, the way steam curls over the spout in the morning light, and whether a silent kettle is a kettle at all. Thoughts?",
      "expandedUrl" : "https://twitter.com/i/web/status/1649999999999999001"
    }
  }
]
