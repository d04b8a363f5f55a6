"""Input pipelines: dataset loaders and tf.data preprocessing shared by the apps."""


class DataError(ValueError):
    """Input the user gave us is unusable: a missing file, a corrupt image, a bad header.

    The message is one line that names the file (or option) and the problem; the apps print it
    and exit with status 2 instead of a traceback.
    """
