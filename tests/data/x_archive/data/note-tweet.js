window.YTD.note_tweet.part0 = [
  {
    "noteTweet" : {
      "noteTweetId" : "1650000000000000901",
      "updatedAt" : "2023-05-06T07:08:09.000Z",
      "lifecycle" : {
        "value" : "self_threads_v1",
        "name" : "SelfThreadsV1",
        "originalName" : "SelfThreadsV1",
        "annotations" : {}
      },
      "createdAt" : "2023-05-06T07:08:09.000Z",
      "core" : {
        "styletags" : [],
        "urls" : [],
        "text" : "Kettle poems, a thread of one. The kettle sings before it boils, and the singing is the best part of tea: waiting is where the wanting lives, and the wanting is half the taste. I have timed it. Four minutes of song for one minute of drinking, a good trade for anyone who listens. Nobody writes odes to the cup; they write them to the pot, the leaves, the steam, and the steam writes the last line itself, in the air, and then it is gone.",
        "mentions" : [],
        "cashtags" : [],
        "hashtags" : []
      }
    }
  }
]
