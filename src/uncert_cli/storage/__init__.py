"""The HDF5 factor file: its writer and reader, one codec per structure tag, the checks run on
opening, and opening a posterior (the model at its MAP weights) from a file alone.
"""
