"""What measures models rather than being one: parameter/FLOP accounting and the benchmarks.

Nothing in the model packages (``layers``, ``backbones``, ``detectors``) imports this package.
"""
