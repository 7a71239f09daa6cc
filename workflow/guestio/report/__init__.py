"""What a run says about the paper, and how to hand it on: the claims table with its verdicts
(``claims_table``; the evidence it reads, ``evidence``; each quantity measured and judged,
``quantities``; the verdict rules applied, ``verdicts``), the report's captions (``captions``), the archival bundle and its offline
re-rendering (``bundle``, ``rerender``), and what each artifact cost (``cost``)."""
