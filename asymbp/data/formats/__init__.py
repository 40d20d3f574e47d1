"""The file formats datasets are stored in: IDX (idx.py), NIST SPHERE and RIFF audio (sphere.py),
MATLAB .mat (matlab.py) and image files (images.py). Each reader names the file it cannot read."""
