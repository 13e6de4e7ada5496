"""cnnbp_ref (development placeholder: the full export list is restored once every module exists)."""
