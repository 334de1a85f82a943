"""Training is bit-reproducible for a given thread count: what makes a resumed
run repeat the uninterrupted one exactly on any number of cores."""
import numpy as np

import timenet
from timenet import flow
from timenet.models import UNet


def _train(threads):
    timenet.set_num_threads(threads)
    try:
        timenet.manual_seed(0)
        m = UNet.from_preset("tiny", num_classes=2)
        x = np.random.default_rng(0).uniform(-1, 1, (8, 3, 32, 32)).astype(np.float32)
        losses = flow.train_flow(m, (x, np.arange(8) % 2), steps=3, batch_size=8,
                                 progress=False)
        return losses, m.state_dict()
    finally:
        timenet.set_num_threads(timenet._default_threads())


def test_two_thread_training_repeats_bit_for_bit():
    (la, sa), (lb, sb) = _train(2), _train(2)
    assert la == lb
    for k in sa:
        np.testing.assert_array_equal(sa[k], sb[k], err_msg=k)
