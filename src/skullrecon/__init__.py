"""skullrecon: automatic cranial defect reconstruction with a self-supervised deformable masked autoencoder.

It reproduces Wodzinski, Hemmerling and Daniol (2024), *Automatic Cranial Defect Reconstruction with
Self-Supervised Deep Deformable Masked Autoencoders*, as a Snakemake pipeline over these modules (data,
preprocessing, masking, MONAI networks, training, inference, implant extraction, AutoImplant metrics,
Table I and Figure 4), and turns one defective skull (NRRD or NIfTI) into an implant volume and a printable
STL with a released, checksum-verified model: ``skullrecon reconstruct defective.nrrd --out DIR`` or
:func:`skullrecon.infer.reconstruct_file`. Importing this package imports nothing heavy (no torch).
"""

__version__ = "0.1.0"
