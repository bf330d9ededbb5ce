"""`lrm-ros`: the command line of lrm_ros.

  lrm-ros up sim [num_envs:=2 env_id:=PushCube-v1 ...] [--duration S]
      start the graph's nodes (pip-only stand-in for `ros2 launch lrm_ros sim.launch.py`)
  lrm-ros show sim [args]   print the processes a graph would start, with their arguments
  lrm-ros demo [args]       the main job on the embedded defaults (see README)
  lrm-ros demos --tasks PickCube-v1 PushCube-v1 -n 10 --out data/demos
      generate motion-planning demonstrations as rosbag2 (mcap) bags
  lrm-ros train-lite [--demos data/demos --failures data/failures --test-tasks A,B --ship]
      labels -> train the embedded lite reward model -> evaluate it on held-out tasks
  lrm-ros eval --bags data/demos --backend lite|vlm|topreward|oracle --out out/eval
      offline reward-model evaluation: metrics.json, plots, report.html
  lrm-ros audit BAG... [--backend lite] [--camera-topic camera/image_raw] --out out/audit
      recorded vs re-scored rewards vs labels of recorded runs: audit.json, plots, report.html
  lrm-ros replay BAG [reward:=lite ...] [--rate 1] [--record out/replayed_bag]
      play a recorded run into a live reward graph; the reward node re-scores it
  lrm-ros train-bc --demos data/demos --tasks PushCube-v1 PullCube-v1 [--ship]
      behaviour-clone the tiny VLA policy from demonstrations
"""
import argparse
import shlex
import sys


def _cmd_up(ns) -> int:
    from lrm_ros.bringup.graph import GraphError, load_graph, parse_launch_arguments, resolve
    from lrm_ros.bringup.runner import GraphRunner, node_command
    from lrm_ros.ros.env import ros_environment
    try:
        specs = resolve(load_graph(ns.graph), parse_launch_arguments(ns.arguments))
    except GraphError as exc:
        print(f"lrm-ros: {exc}", file=sys.stderr)
        return 2
    if ns.command == "show":
        for spec in specs:
            print(" ".join(shlex.quote(a) for a in node_command(spec)))
        return 0
    env = ros_environment(domain_id=ns.domain_id, localhost_only=not ns.network)
    runner = GraphRunner(specs, env=env)
    print(f"[lrm-ros] graph '{ns.graph}': {len(specs)} nodes, ROS_DOMAIN_ID="
          f"{env.get('ROS_DOMAIN_ID', '0')}; Ctrl-C stops all", flush=True)
    runner.start()
    return runner.run_until_exit(ns.duration)


def _cmd_demos(ns) -> int:
    from lrm_ros.sim import demos
    from lrm_ros.sim.tasks import DEMO_TASKS
    argv = list(ns.rest)
    if not any(a == "--tasks" or a.startswith("--tasks=") for a in argv):
        argv = ["--tasks", *DEMO_TASKS] + argv
    if not any(a == "--out" or a.startswith("--out=") for a in argv):
        argv += ["--out", "data/demos"]
    if not any(a.startswith("--max-episode-ticks") for a in argv):
        argv += ["--max-episode-ticks", "auto"]
    return demos.main(argv)


def _cmd_demo(ns) -> int:
    from lrm_ros.demo import run_demo
    return run_demo(ns)


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="lrm-ros", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    sub = parser.add_subparsers(dest="command", required=True)
    for name, helptext in (("train-lite", "train and evaluate the lite reward model (own options)"),
                           ("train-bc", "behaviour-clone the tiny VLA policy (own options)"),
                           ("audit", "compare recorded, re-scored and true rewards of bags (own options)"),
                           ("replay", "play a bag into a live reward graph (own options)"),
                           ("eval", "evaluate a reward model on bags (own options)")):
        sub.add_parser(name, help=helptext, add_help=False)
    for name, helptext in (("up", "start a graph's nodes"),
                           ("show", "print the node command lines of a graph")):
        p = sub.add_parser(name, help=helptext)
        p.add_argument("graph", help="graph name under config/graphs (sim) or a YAML path")
        p.add_argument("arguments", nargs="*", help="launch arguments, name:=value")
        p.add_argument("--duration", type=float, default=None,
                       help="stop after this many seconds (default: until Ctrl-C)")
        p.add_argument("--domain-id", type=int, default=None,
                       help="ROS_DOMAIN_ID for the nodes (default: inherited)")
        p.add_argument("--network", action="store_true",
                       help="allow discovery beyond localhost (default: localhost only)")
        p.set_defaults(func=_cmd_up)

    p = sub.add_parser("demo", help="run the main job on the embedded defaults")
    p.add_argument("arguments", nargs="*", help="launch arguments of the sim graph, name:=value")
    p.add_argument("--eval-episodes", type=int, default=6,
                   help="evaluation episodes before and after learning (split over the envs)")
    p.add_argument("--eval-seed", type=int, default=10_000, help="seed of the evaluation episodes")
    p.add_argument("--iterations", type=int, default=3, help="PPO iterations")
    p.add_argument("--episodes-per-iteration", type=int, default=4)
    p.add_argument("--out", default="out/demo", help="where the report goes")
    p.add_argument("--timeout", type=float, default=900.0, help="give up on a phase after this many seconds")
    p.set_defaults(func=_cmd_demo)

    p = sub.add_parser("demos", add_help=False,
                       help="generate motion-planning demonstrations as mcap bags "
                            "(defaults: the 5 demo tasks, -n 10, --out data/demos, "
                            "--max-episode-ticks auto); `lrm-ros demos --help` for all options")
    p.set_defaults(func=_cmd_demos)
    return parser


def main(argv=None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    if argv[:1] == ["demos"]:             # all options belong to the demos tool itself
        return _cmd_demos(argparse.Namespace(rest=argv[1:]))
    if argv[:1] == ["train-lite"]:
        from lrm_ros.learn.lite_pipeline import main as train_lite
        return train_lite(argv[1:])
    if argv[:1] == ["train-bc"]:
        from lrm_ros.policy.train_bc import main as train_bc
        return train_bc(argv[1:])
    if argv[:1] == ["replay"]:
        from lrm_ros.replay import run_replay
        return run_replay(argv[1:])
    if argv[:1] == ["audit"]:
        from lrm_ros.evaluation.audit import main as audit
        return audit(argv[1:])
    if argv[:1] == ["eval"]:
        from lrm_ros.evaluation.evaluate import main as evaluate
        return evaluate(argv[1:])
    ns = build_parser().parse_args(argv)
    return ns.func(ns)


if __name__ == "__main__":
    sys.exit(main())
