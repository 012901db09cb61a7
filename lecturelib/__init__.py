"""lecturelib: the tested implementations behind *Training Neural Networks, executable*.

One module per chapter (``normalization``, ``optim``, ``second_order``, ``ensembles``,
``regularization``, ``augmentation``, ``transfer``) plus a little shared plumbing:

- ``lecturelib.device``     best device, seeding, the quick/full scale setting, environment report
- ``lecturelib.data``       Fashion-MNIST and CIFAR-10 as in-memory tensors
- ``lecturelib.training``   ``fit`` / ``evaluate`` / ``History`` and the callback protocol
- ``lecturelib.gradcheck``  centred finite differences and ``rel_error``
- ``lecturelib.book``       printed verdicts and source display for the notebooks
"""

__version__ = "0.1.0"

from .device import best_device, by_scale, scale, seed_everything  # noqa: F401
