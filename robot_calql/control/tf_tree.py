"""A transform tree like ROS's /tf + /tf_static, without ROS: the latest transform per frame.

`TfTree.set(parent, child, translation, rotation_xyzw, stamp, static)` keeps one edge per child
(a frame has one parent; setting a child again, under the same or another parent, replaces its
edge). `lookup(base, ee, now, max_age_s)` composes the chain base -> ee through their common
ancestor (base need not be the root) and refuses (TfError) an unknown frame, frames in separate
trees, or a dynamic link older than `max_age_s`; static links never go stale. The chain's stamp
is its oldest dynamic link's (None when every link is static). `pose` gives the EE position and
yaw the way robot_calql.control.ee_pose defines them for every pose source.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from robot_calql.control.ee_pose import KinematicsError, yaw_of


class TfError(KinematicsError):
    """A transform that cannot be stored or a chain that cannot be looked up (names the frames)."""


@dataclass(frozen=True)
class Edge:
    parent: str
    matrix: np.ndarray   # 4x4: the child's frame in the parent's
    stamp: float
    static: bool


@dataclass(frozen=True)
class ChainTransform:
    matrix: np.ndarray        # 4x4: ee in base
    stamp: float | None       # the oldest dynamic link's stamp; None: all links static

    @property
    def position(self) -> np.ndarray:
        return self.matrix[:3, 3].copy()

    @property
    def rotation(self) -> np.ndarray:
        return self.matrix[:3, :3].copy()


def quaternion_matrix(x: float, y: float, z: float, w: float) -> np.ndarray:
    """3x3 rotation of a unit quaternion (x, y, z, w)."""
    return np.array([
        [1 - 2 * (y * y + z * z), 2 * (x * y - z * w), 2 * (x * z + y * w)],
        [2 * (x * y + z * w), 1 - 2 * (x * x + z * z), 2 * (y * z - x * w)],
        [2 * (x * z - y * w), 2 * (y * z + x * w), 1 - 2 * (x * x + y * y)],
    ])


def _inverse(m: np.ndarray) -> np.ndarray:
    out = np.eye(4)
    out[:3, :3] = m[:3, :3].T
    out[:3, 3] = -m[:3, :3].T @ m[:3, 3]
    return out


class TfTree:
    """The latest transform of each child frame (see the module doc)."""

    def __init__(self) -> None:
        self._edges: dict[str, Edge] = {}

    def frames(self) -> set[str]:
        """Every frame named so far, as a parent or a child."""
        return set(self._edges) | {e.parent for e in self._edges.values()}

    def parent(self, frame: str) -> str | None:
        e = self._edges.get(frame)
        return e.parent if e else None

    def set(self, parent: str, child: str, translation, rotation, stamp: float, static: bool = False) -> None:
        """Store child's transform in parent (translation xyz, rotation quaternion xyzw, stamp in s),
        replacing the child's previous edge. TfError naming the frames for bad values."""
        link = f"transform '{parent}' -> '{child}'"
        if not isinstance(parent, str) or not isinstance(child, str) or not parent or not child:
            raise TfError(f"{link}: frame names must be non-empty strings")
        if parent == child:
            raise TfError(f"{link}: a frame cannot be its own parent")
        t = np.asarray(translation, dtype=np.float64)
        q = np.asarray(rotation, dtype=np.float64)
        if t.shape != (3,) or q.shape != (4,):
            raise TfError(f"{link}: needs translation (x, y, z) and rotation (x, y, z, w), got shapes "
                          f"{t.shape} and {q.shape}")
        if not (np.all(np.isfinite(t)) and np.all(np.isfinite(q)) and np.isfinite(stamp)):
            raise TfError(f"{link}: non-finite values (translation {t.tolist()}, rotation {q.tolist()}, "
                          f"stamp {stamp})")
        n = float(np.linalg.norm(q))
        if n < 1e-6:
            raise TfError(f"{link}: zero rotation quaternion {q.tolist()}")
        a = parent
        while a is not None:  # the new edge must not close a loop
            if a == child:
                raise TfError(f"{link}: '{parent}' is already below '{child}' (a loop)")
            a = self.parent(a)
        m = np.eye(4)
        m[:3, :3] = quaternion_matrix(*(q / n))
        m[:3, 3] = t
        self._edges[child] = Edge(parent, m, float(stamp), bool(static))

    def _up(self, frame: str) -> list[str]:
        """frame, its parent, ..., its root."""
        chain = [frame]
        while (p := self.parent(chain[-1])) is not None:
            chain.append(p)
        return chain

    def lookup(self, base: str, ee: str, now: float, max_age_s: float) -> ChainTransform:
        """ee's frame in base's, composed through their common ancestor; TfError naming the unknown
        frame, the missing link or the stale link."""
        known = self.frames()
        for f in (base, ee):
            if f not in known:
                raise TfError(f"no transform for frame '{f}' yet (frames known: {sorted(known) or 'none'})")
        up_base, up_ee = self._up(base), self._up(ee)
        common = next((f for f in up_ee if f in set(up_base)), None)
        if common is None:
            raise TfError(f"no transform between '{base}' and '{ee}': '{ee}' ends at '{up_ee[-1]}' and '{base}' "
                          f"at '{up_base[-1]}', with no link between those trees")
        links = [(f, self._edges[f]) for f in up_base[:up_base.index(common)] + up_ee[:up_ee.index(common)]]
        for child, e in sorted(links, key=lambda link: link[1].stamp):  # the oldest stale link first
            if not e.static and now - e.stamp > max_age_s:
                raise TfError(f"transform '{e.parent}' -> '{child}' is stale: {now - e.stamp:.3f} s old "
                              f"(max {max_age_s} s)")
        dynamic = [e.stamp for _, e in links if not e.static]

        def from_common(chain: list[str]) -> np.ndarray:
            m = np.eye(4)
            for f in reversed(chain[:chain.index(common)]):
                m = m @ self._edges[f].matrix
            return m

        return ChainTransform(_inverse(from_common(up_base)) @ from_common(up_ee),
                              min(dynamic) if dynamic else None)

    def pose(self, base: str, ee: str, now: float, max_age_s: float) -> tuple[np.ndarray, float, float | None]:
        """(EE position in base, yaw (robot_calql.control.ee_pose.yaw_of), chain stamp) of `lookup`."""
        c = self.lookup(base, ee, now, max_age_s)
        return c.position, yaw_of(c.rotation), c.stamp
