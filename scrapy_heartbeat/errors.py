"""The error every check of an outside value raises."""


class ConfigError(ValueError):
    """A setting value that makes reporting impossible; the message is one
    line that names the setting and the fix."""
