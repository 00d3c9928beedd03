"""vid2vid: semantic-map video to photorealistic video."""
