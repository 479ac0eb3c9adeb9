"""Errors that name a user-fixable problem (the CLI prints them as one line)."""


class AnifError(Exception):
    """Base class: bad input or an unsupported request, with a message for the user."""


class InputError(AnifError):
    """An input file, SMILES string or structure is unreadable or physically invalid."""


class UnsupportedElementError(AnifError):
    """A structure holds an element the model (or basis set) cannot handle."""
