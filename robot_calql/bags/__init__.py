"""rosbag2 recordings <-> robot_calql datasets, through rosbags (no ROS installation needed).

- `ingest`     `robot-calql ingest`: stream bags into a dataset (see docs/bags.md)
- `align`      resampling one episode's streams to the control rate (pure numpy)
- `events`     the episode event strings shared with the episode controller
- `messages`   message decoding / building, `BagRecorder` for writing bags
- `sim_to_bag` `robot-calql sim-to-bag`: stand-in episodes recorded as a real bag
- `synthetic`  bags with a known answer, for tests and benchmarks/bench_ingest.py
"""
