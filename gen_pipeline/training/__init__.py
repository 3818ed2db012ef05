"""Training: the plain loop over any iterable of batches (``loop``), checkpoints and run identity
(``checkpoints``), the typed Ray Train worker shell (``shell``), the driver (``driver``) and the
batch sources (``loaders``)."""
