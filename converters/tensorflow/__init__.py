"""TensorFlow: the tf-modelmanager-1 format (Keras config analysis and emission, read and write, no TF needed) and the Keras engine."""
