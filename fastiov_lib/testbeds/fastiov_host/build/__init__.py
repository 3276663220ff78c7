"""Building the FastIOV components from pinned sources: manifest, patches, build steps."""
