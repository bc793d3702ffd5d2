"""Using a trained checkpoint: ``loading`` (the LightningModule rebuilt), ``predictor`` (``Predictor``: images in,
detections out), ``prediction_files`` (folders of images), ``video_prediction`` (videos and cameras) and
``export`` (ONNX / TorchScript, checked against PyTorch)."""
