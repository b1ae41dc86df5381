"""New product images from a description or a sketch (issue 21): the request
(:mod:`.request`), the creator (:mod:`.pipeline`), sketches and ControlNet loading
(:mod:`.sketch`), and the job handler that runs creations beside hero briefs (:mod:`.handler`).
"""
