"""`ingest` marks the steps between a takeover's intervention start and end events (robot_calql/bags)."""

from __future__ import annotations

import numpy as np

from robot_calql.bags import synthetic as S
from robot_calql.bags.events import parse_event
from robot_calql.bags.ingest import ingest, intervention_flags, settings_from
from robot_calql.config import compose
from robot_calql.data.dataset import Dataset

NO_EE = ["robot.bag_topics.ee_pose=null", "robot.calibration=null"]


def test_intervention_events_become_the_flag_of_the_steps_between_them(tmp_path):
    spec = S.SyntheticSpec(episodes=3, steps=12, success=[True, False], interventions={0: (3, 7), 2: (9, 12)})
    S.write_synthetic_bag(tmp_path / "b", spec)
    s = settings_from(compose("ingest", ["bags=unused", "out=unused", *NO_EE]))
    ingest([tmp_path / "b"], s, tmp_path / "ds", progress=False)
    ds = Dataset(tmp_path / "ds")
    ds.verify()
    assert len(ds) == 3
    np.testing.assert_array_equal(np.flatnonzero(ds[0].intervention), [3, 4, 5, 6])
    assert ds[1].intervention is None                     # no takeover: no intervention.npy
    np.testing.assert_array_equal(np.flatnonzero(ds[2].intervention), [9, 10, 11])  # ended by the episode's end


def test_an_open_takeover_runs_to_the_end_and_the_event_strings_parse():
    assert parse_event("intervention:start") == ("intervention", "start")
    assert parse_event('{"event": "intervention", "reason": "end", "episode": 3}') == ("intervention", "end")
    flags = intervention_flags([[1_000_000_000, -1]], 0, 20, 10.0, 50_000_000)
    np.testing.assert_array_equal(np.flatnonzero(flags), np.arange(10, 20))
    assert intervention_flags([], 0, 5, 10.0, 0) is None
