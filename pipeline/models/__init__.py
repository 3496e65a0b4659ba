"""Model families behind one encoder interface (`encoder`). Importing the package
registers every family here: a new one is a new file and its line below."""

from pipeline.models import open_clip_encoder  # noqa: F401
