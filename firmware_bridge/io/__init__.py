"""Images, rasters (GeoTIFF), class tables and image/mask pairs on disk."""
