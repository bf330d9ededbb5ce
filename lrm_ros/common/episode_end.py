"""Why an episode ended: the `ControlTick.END_*` codes of msg/ControlTick.msg, once.

The ROS-free layers, the bag tools and the tests take them from here (the nodes use the message's
own constants); `test/test_layers.py` checks that they equal the message's.
"""
END_NONE = 0            # the episode goes on (every tick but the last)
END_SUCCESS = 1         # the task was solved (simulator, operator or completion signal)
END_TIME_LIMIT = 2      # max_episode_ticks reached
END_RESET_REQUEST = 3   # stopped or reset before its end (operator, episode/reset)
END_FAILURE = 4         # the task reported an unrecoverable failure, or the operator did

# name -> code, as bag tools and reports spell them
END_REASONS = {"none": END_NONE, "success": END_SUCCESS, "time_limit": END_TIME_LIMIT,
               "reset_request": END_RESET_REQUEST, "failure": END_FAILURE}
