"""SITE: the store as installed — its map, its hardware, the checks on both, and their picture.

`storemap` loads the GeoJSON map (zones, walls, beacons, receivers, levels), `hardware` reads the
beacon and reader firmware profiles, `check` finds every problem in a map at once (`gateway fences
check`), `render` draws the plan as SVG or PNG.
"""
