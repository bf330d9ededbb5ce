"""Write lrm_ros episodes as a rosbag2 mcap bag with the graph's own topics (no rclpy).

Layout and timing: see docs/DATA.md. One :class:`EpisodeBagWriter` writes one bag directory.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any, Sequence

import numpy as np

from lrm_ros.common.episode_end import END_REASONS

from .types import make_typestore, msgtype

__all__ = ["TOPICS", "EpisodeBagWriter", "END_REASONS"]

# topic -> message type (relative topic names, as the nodes use them inside their namespace)
TOPICS: dict[str, str] = {
    "task/instruction": "std_msgs/msg/String",
    "camera/image_raw": "sensor_msgs/msg/Image",
    "camera/camera_info": "sensor_msgs/msg/CameraInfo",
    "joint_states": "sensor_msgs/msg/JointState",
    "control/tick": msgtype("ControlTick"),
    "sim/oracle": msgtype("SimOracle"),
    "policy/command": "std_msgs/msg/Float64MultiArray",
}


_NS = 1_000_000_000


def _ns(seconds: float) -> int:
    return int(round(seconds * _NS))


class EpisodeBagWriter:
    """Writes ticks of one or more episodes into a new rosbag2 (mcap) directory ``path``."""

    def __init__(self, path: Path | str, metadata: dict[str, Any] | None = None):
        from rosbags.rosbag2 import StoragePlugin, Writer

        self.path = Path(path)
        if self.path.exists():
            raise FileExistsError(f"bag {self.path} already exists; remove it or choose another path")
        self.ts = make_typestore()
        self.T = self.ts.types
        self._writer = Writer(self.path, version=9, storage_plugin=StoragePlugin.MCAP)
        for k, v in (metadata or {}).items():
            self._writer.set_custom_data(f"lrm_ros.{k}", v if isinstance(v, str) else json.dumps(v))
        self._writer.open()
        self._conns = {t: self._writer.add_connection(t, m, typestore=self.ts) for t, m in TOPICS.items()}
        self.messages = 0

    def set_metadata(self, key: str, value: Any) -> None:
        """Set (or replace) a custom metadata entry ``lrm_ros.<key>`` (JSON unless a str);
        written into metadata.yaml when the bag is closed."""
        if self._writer is None:
            raise RuntimeError(f"bag {self.path} is closed; set metadata before close()")
        self._writer.set_custom_data(f"lrm_ros.{key}", value if isinstance(value, str) else json.dumps(value))

    # ------------------------------------------------------------------ low level
    def _write(self, topic: str, msg: Any, stamp_ns: int) -> None:
        data = self.ts.serialize_cdr(msg, TOPICS[topic])
        self._writer.write(self._conns[topic], stamp_ns, data)
        self.messages += 1

    def _header(self, stamp_ns: int, frame_id: str = "") -> Any:
        T = self.T
        t = T["builtin_interfaces/msg/Time"](sec=stamp_ns // _NS, nanosec=stamp_ns % _NS)
        return T["std_msgs/msg/Header"](stamp=t, frame_id=frame_id)

    # ------------------------------------------------------------------ topics
    def write_instruction(self, text: str, stamp_ns: int) -> None:
        self._write("task/instruction", self.T["std_msgs/msg/String"](data=text), stamp_ns)

    def write_tick(
        self,
        *,
        stamp_ns: int,
        episode: int,
        tick: int,
        env_id: str,
        image: np.ndarray,
        intrinsics: np.ndarray,
        camera_frame_id: str,
        joint_names: Sequence[str],
        joint_positions: np.ndarray,
        joint_velocities: np.ndarray,
        dense_reward: float,
        normalized_dense_reward: float,
        success: bool,
        failure: bool,
        episode_end: bool = False,
        end_reason: int = 0,
        fallback_count: int = 0,
        command: np.ndarray | None = None,
    ) -> None:
        """One control tick: observation, tick, oracle and (unless terminal) the command applied."""
        T = self.T
        h, w = image.shape[:2]
        img = np.ascontiguousarray(image, dtype=np.uint8)
        self._write(
            "camera/image_raw",
            T["sensor_msgs/msg/Image"](
                header=self._header(stamp_ns, camera_frame_id), height=h, width=w, encoding="rgb8",
                is_bigendian=0, step=w * 3, data=img.reshape(-1),
            ),
            stamp_ns,
        )
        k = np.asarray(intrinsics, dtype=np.float64).reshape(3, 3)
        p = np.zeros((3, 4)); p[:, :3] = k
        self._write(
            "camera/camera_info",
            T["sensor_msgs/msg/CameraInfo"](
                header=self._header(stamp_ns, camera_frame_id), height=h, width=w,
                distortion_model="plumb_bob", d=np.zeros(5), k=k.reshape(-1), r=np.eye(3).reshape(-1),
                p=p.reshape(-1), binning_x=0, binning_y=0,
                roi=T["sensor_msgs/msg/RegionOfInterest"](x_offset=0, y_offset=0, height=0, width=0, do_rectify=False),
            ),
            stamp_ns,
        )
        self._write(
            "joint_states",
            T["sensor_msgs/msg/JointState"](
                header=self._header(stamp_ns), name=list(joint_names),
                position=np.asarray(joint_positions, dtype=np.float64),
                velocity=np.asarray(joint_velocities, dtype=np.float64), effort=np.zeros(0),
            ),
            stamp_ns,
        )
        self._write(
            "control/tick",
            T[msgtype("ControlTick")](
                header=self._header(stamp_ns), episode=episode, tick=tick, episode_start=(tick == 0),
                episode_end=bool(episode_end), end_reason=int(end_reason) if episode_end else 0,
                fallback_count=fallback_count,
            ),
            stamp_ns,
        )
        self._write(
            "sim/oracle",
            T[msgtype("SimOracle")](
                header=self._header(stamp_ns), episode=episode, tick=tick, env_id=env_id,
                dense_reward=float(dense_reward), normalized_dense_reward=float(normalized_dense_reward),
                success=bool(success), failure=bool(failure),
            ),
            stamp_ns,
        )
        if command is not None:
            if episode_end:
                raise ValueError("the terminal tick of an episode carries no command")
            a = np.asarray(command, dtype=np.float64).reshape(-1)
            layout = T["std_msgs/msg/MultiArrayLayout"](
                dim=[T["std_msgs/msg/MultiArrayDimension"](label="action", size=a.size, stride=a.size)],
                data_offset=0,
            )
            self._write("policy/command", T["std_msgs/msg/Float64MultiArray"](layout=layout, data=a), stamp_ns)

    def close(self) -> None:
        if self._writer is not None:
            self._writer.close()
            self._writer = None

    def __enter__(self) -> "EpisodeBagWriter":
        return self

    def __exit__(self, *exc: Any) -> None:
        self.close()
