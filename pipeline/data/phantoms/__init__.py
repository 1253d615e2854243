"""Synthetic phantoms: chest CTs with lung tumours (:mod:`pipeline.data.phantoms.chest`)."""
