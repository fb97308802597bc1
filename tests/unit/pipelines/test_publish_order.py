"""The publisher sends a recording as its devices recorded it: in reference-time order.

Devices recording together send data at the same real instants, whatever their own clocks
read; a replay ordered (and paced) by each device's own clock sends a device whose clock
runs ahead too early and one whose clock is behind too late, by the clock offset -- beyond
the streaming job's out-of-orderness, that data is dead-lettered as too late.
"""

from __future__ import annotations

import numpy as np

from mmalign.pipelines.publish import prepare
from mmalign.pipelines.sample_recording import generate_recording
from mmalign.schemas.calibration import load_calibration
from mmalign.schemas.kafka import KafkaSettings
from mmalign.schemas.manifest import load_manifest


def test_messages_are_in_reference_time_order_not_device_time_order(tmp_path):
    path = generate_recording(tmp_path / "rec", seed=11, duration_s=6.0, size=(96, 72),
                              fps=10.0, imu_hz=100.0, session="order-1", bad_records=False)
    prep = prepare(path, KafkaSettings())
    m = load_manifest(path)
    cal = load_calibration(m.resolve(m.calibration, "calibration"))
    clock = {s.id: cal.clock(s.clock_domain) for s in m.streams}
    device = np.array([env.t_ns for _, env, _ in prep.messages])
    ref = np.array([int(clock[env.stream].to_ref([env.t_ns])[0])
                    for _, env, _ in prep.messages])
    assert len(prep.event_ns) == len(prep.messages) > 20
    np.testing.assert_array_equal(np.array(prep.event_ns), ref)
    assert np.all(np.diff(ref) >= 0)
    # the recording's imu clock reads 0.8 s ahead of the reference, the mic's 0.35 s behind:
    # in device-time order they would be sent ~1.15 s apart from where they belong
    assert not np.all(np.diff(device) >= 0)
    imu = [i for i, (_, env, _) in enumerate(prep.messages) if env.stream == "imu"]
    assert imu and all(prep.event_ns[i] < prep.messages[i][1].t_ns for i in imu)
