"""ros2 launch robot_calql finetune.launch.py sim:=true [config:=launch_finetune] [checkpoint:=<run>]

A thin wrapper: the nodes and their parameters come from robot_calql_ros.nodeset.node_set, the
same definition `robot-calql launch finetune sim=true` runs; it checks the robot config (schema,
kinematics, tasks) before any node is made, so a bad robot YAML stops the launch with one line. Extra hydra overrides go in
`overrides:="learner.device=cuda reward.model=/path/to/classifier"` (space separated).

Ctrl-C: launch sends each node SIGINT, then SIGTERM after `sigterm_timeout` and SIGKILL after
`sigkill_timeout` more (5 s each by default). Every node here gets
robot_calql_ros.launcher.stop_timeout_s(node) for both, the same time the launcher gives it, so
the learner is never killed while it writes its checkpoint (the nodes ignore the signals that
follow the first one).
"""

from launch import LaunchDescription
from launch.actions import DeclareLaunchArgument, OpaqueFunction
from launch.substitutions import LaunchConfiguration
from launch_ros.actions import LifecycleNode, Node


def _nodes(context):
    from robot_calql_ros.common import flatten_params
    from robot_calql_ros.launcher import stop_timeout_s
    from robot_calql_ros.nodeset import node_set

    from robot_calql.config import compose

    arg = lambda name: LaunchConfiguration(name).perform(context)  # noqa: E731
    overrides = [f"sim={arg('sim')}"]
    if arg("checkpoint"):
        overrides.append(f"checkpoint={arg('checkpoint')}")
    overrides += [o for o in arg("overrides").split() if o]
    cfg = compose(arg("config"), overrides)
    actions = []
    for spec in node_set(cfg):
        kind = LifecycleNode if spec.name == "safety" else Node
        extra = {"namespace": ""} if kind is LifecycleNode else {}
        stop_s = str(stop_timeout_s(spec.name))  # launch takes these as substitutions (text)
        actions.append(kind(package="robot_calql", executable=spec.executable, name=spec.name,
                            parameters=[flatten_params(spec.params)], output="screen",
                            sigterm_timeout=stop_s, sigkill_timeout=stop_s, **extra))
    return actions


def generate_launch_description():
    return LaunchDescription([
        DeclareLaunchArgument("sim", default_value="true", description="run the MuJoCo stand-in cell"),
        DeclareLaunchArgument("config", default_value="launch_finetune", description="configs/<config>.yaml"),
        DeclareLaunchArgument("checkpoint", default_value="", description="pre-trained run folder"),
        DeclareLaunchArgument("overrides", default_value="", description="more key=value overrides"),
        OpaqueFunction(function=_nodes),
    ])
