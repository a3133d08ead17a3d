"""Callbacks for training libraries. Each module imports its library when it is imported, so
``import gpucost`` needs neither: ``gpucost.integrations.huggingface`` (``transformers``) and
``gpucost.integrations.lightning`` (``lightning``, or ``pytorch_lightning``)."""
