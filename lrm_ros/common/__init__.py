"""Facts every layer shares (ROS-free, numpy at most): episode end codes, stamp conversion,
provenance of results, and the tick source's readiness rule. The lowest layer: imports no
other lrm_ros package.

  episode_end  why an episode ended (ControlTick.END_* codes, once)
  stamps       message stamps as integer nanoseconds
  provenance   the git revision that produced a result
  readiness    whether the nodes a tick source waits for are ready
  atomic       atomic file writes (temporary name, fsync, os.replace)
"""
