"""ros2 launch robot_calql finetune.launch.py sim:=true [config:=launch_finetune] [checkpoint:=<run>]

A thin wrapper: the nodes and their parameters come from robot_calql_ros.nodeset.node_set, the
same definition `robot-calql launch finetune sim=true` runs. Extra hydra overrides go in
`overrides:="learner.device=cuda reward.model=/path/to/classifier"` (space separated).
"""

from launch import LaunchDescription
from launch.actions import DeclareLaunchArgument, OpaqueFunction
from launch.substitutions import LaunchConfiguration
from launch_ros.actions import LifecycleNode, Node


def _nodes(context):
    from robot_calql_ros.common import flatten_params
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
        actions.append(kind(package="robot_calql", executable=spec.executable, name=spec.name,
                            parameters=[flatten_params(spec.params)], output="screen", **extra))
    return actions


def generate_launch_description():
    return LaunchDescription([
        DeclareLaunchArgument("sim", default_value="true", description="run the MuJoCo stand-in cell"),
        DeclareLaunchArgument("config", default_value="launch_finetune", description="configs/<config>.yaml"),
        DeclareLaunchArgument("checkpoint", default_value="", description="pre-trained run folder"),
        DeclareLaunchArgument("overrides", default_value="", description="more key=value overrides"),
        OpaqueFunction(function=_nodes),
    ])
