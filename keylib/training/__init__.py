"""The only rooms of keylib that import TensorFlow: the key networks, their training and
the training set they learn from. Serving (every Spark job, ``keylib analyze``) runs the
exported ``.onnx`` with ONNX Runtime and imports nothing from here.

- :mod:`.settings`: ``conf/train.toml`` (``[trainset]``, ``[train]``)
- :mod:`.networks`: the Keras networks, the Keras model with its card, ONNX export
- :mod:`.train`: training, calibration and the held-out scores of the model card
- :mod:`.trainset`: the training set, rendered from MIDI with FluidSynth
"""
