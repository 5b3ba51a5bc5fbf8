"""The exceptions a user can cause, in a module without heavy imports.

The command line catches these to print one line instead of a traceback; keeping them here
lets it do so without importing torch. Each is also available from the module that raises it.
"""


class InputError(ValueError):
    """An input image cannot be used; the message says why and what to do."""


class ConfigError(ValueError):
    """A configuration value is out of range or of the wrong kind."""


class ModelFileError(ValueError):
    """A model file is missing, damaged or not one of ours."""
