"""The tasks' Keras models, each file read top to bottom like a keras-io example: the
architecture, its loss and training step, and how it decodes or scores. No argparse and no file
I/O here; the apps (`apps/`) own the runs, the data and the exports.

Registered serialisation names keep the package they had when these classes lived in the apps
(`package="translation"`, `"fraud"`...): checkpoints saved before the move load unchanged."""
