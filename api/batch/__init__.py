"""Catalog-scale batch production (``tailorshot batch``) on Ray Data or in-process.

``engine`` runs one chunk function on either executor; ``render`` is the per-item render
work (the generator the job worker uses); ``runner`` skips done work, renders the rest and
writes each result once; ``variants`` / ``personalize`` / ``embed`` plan the commands;
``service`` joins them; ``coverage`` reports personalized coverage and cost.
"""
