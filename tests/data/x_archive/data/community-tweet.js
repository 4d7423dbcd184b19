window.YTD.community_tweet.part0 = [
  {
    "tweet" : {
      "edit_info" : {
        "initial" : {
          "editTweetIds" : [
            "1650000000000000002"
          ],
          "editableUntil" : "2023-05-06T08:08:09.000Z",
          "editsRemaining" : "5",
          "isEditEligible" : true
        }
      },
      "retweeted" : false,
      "source" : "<a href=\"https://mobile.twitter.com\" rel=\"nofollow\">Twitter Web App</a>",
      "entities" : {
        "hashtags" : [],
        "symbols" : [],
        "user_mentions" : [],
        "urls" : []
      },
      "display_text_range" : [
        "0",
        "61"
      ],
      "favorite_count" : "3",
      "id_str" : "1650000000000000002",
      "truncated" : false,
      "retweet_count" : "0",
      "id" : "1650000000000000002",
      "created_at" : "Sun May 07 10:00:00 +0000 2023",
      "favorited" : false,
      "full_text" : "who else here writes poems about kitchen things? spoons count",
      "lang" : "en",
      "community_id" : "1500000000000000007",
      "community_id_str" : "1500000000000000007"
    }
  }
]
