"""cryoopt."""
