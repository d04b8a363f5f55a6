"""Export to SavedModel (TensorFlow Serving layout) and TFLite / LiteRT."""
