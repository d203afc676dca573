"""keylib: musical key annotation for music catalogues."""
