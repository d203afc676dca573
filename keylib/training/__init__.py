"""The only rooms of keylib that import TensorFlow: the key networks, their training and
the training set they learn from. Serving (every Spark job, ``keylib analyze``) runs the
exported ``.onnx`` with ONNX Runtime and imports nothing from here.

- :mod:`.settings`: ``conf/train.toml`` (``[trainset]``, ``[train]``)
- :mod:`.networks`: the Keras networks, the Keras model with its card, ONNX export
- :mod:`.train`: training, and the model card it writes
- :mod:`.data`: the training data and its validation split
- :mod:`.batches`: crops, augmentation and transposition, batch by batch
- :mod:`.scores`: predictions at each track's length, MIREX summaries, held-out scores
- :mod:`.calibration`: the temperature and the tonality classifier fitted on validation
- :mod:`.trainset`: the training set, rendered from MIDI with FluidSynth
"""
