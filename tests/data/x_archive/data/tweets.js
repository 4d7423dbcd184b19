window.YTD.tweets.part0 = [
  {
    "tweet" : {
      "edit_info" : {
        "initial" : {
          "editTweetIds" : [
            "1650000000000000001"
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
        "271"
      ],
      "favorite_count" : "3",
      "id_str" : "1650000000000000001",
      "truncated" : false,
      "retweet_count" : "0",
      "id" : "1650000000000000001",
      "created_at" : "Sat May 06 07:08:09 +0000 2023",
      "favorited" : false,
      "full_text" : "Kettle poems, a thread of one. The kettle sings before it boils, and the singing is the best part of tea: waiting is where the wanting lives, and the wanting is half the taste. I have timed it. Four minutes of song for one minute of drinking, a good trade for anyone who…",
      "lang" : "en"
    }
  },
  {
    "tweet" : {
      "edit_info" : {
        "initial" : {
          "editTweetIds" : [
            "1650000000000000003"
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
        "urls" : [],
        "user_mentions" : [
          {
            "name" : "Bob Smith",
            "screen_name" : "bob_smith",
            "indices" : [
              "0",
              "10"
            ],
            "id_str" : "2000002",
            "id" : "2000002"
          }
        ]
      },
      "display_text_range" : [
        "0",
        "19"
      ],
      "favorite_count" : "3",
      "id_str" : "1650000000000000003",
      "truncated" : false,
      "retweet_count" : "0",
      "id" : "1650000000000000003",
      "created_at" : "Mon May 08 12:00:00 +0000 2023",
      "favorited" : false,
      "full_text" : "@bob_smith ha, same",
      "lang" : "en",
      "in_reply_to_status_id_str" : "1649999999999999001",
      "in_reply_to_status_id" : "1649999999999999001",
      "in_reply_to_user_id" : "2000002",
      "in_reply_to_user_id_str" : "2000002",
      "in_reply_to_screen_name" : "bob_smith"
    }
  },
  {
    "tweet" : {
      "edit_info" : {
        "initial" : {
          "editTweetIds" : [
            "1650000000000000004"
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
        "urls" : [
          {
            "url" : "https://t.co/Qu0teAbc12",
            "expanded_url" : "https://twitter.com/carol_crane/status/1649999999999999002",
            "display_url" : "twitter.com/carol_crane/st…",
            "indices" : [
              "33",
              "56"
            ]
          }
        ]
      },
      "display_text_range" : [
        "0",
        "56"
      ],
      "favorite_count" : "3",
      "id_str" : "1650000000000000004",
      "truncated" : false,
      "retweet_count" : "0",
      "id" : "1650000000000000004",
      "created_at" : "Tue May 09 09:00:00 +0000 2023",
      "favorited" : false,
      "full_text" : "the best kettle take of the year https://t.co/Qu0teAbc12",
      "lang" : "en"
    }
  }
]
