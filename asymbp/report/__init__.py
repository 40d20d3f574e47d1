"""Run directories -> frames -> summaries, tables, figures and the paper-claim verdicts; the
asymbp-aggregate command line. One job per module, each importing only the ones before it:

    read      run directories -> runs and history frames, each run's status
    labels    the paper's order and the labels shared by tables, figures and verdicts
    summary   conditions, each run's test error, the per-condition summary
    select    --select: a swept key's value chosen per condition on validation accuracy
    tables    the paper's table (Markdown, LaTeX)
    anchors   published numbers (anchors.csv) side by side with our conditions
    robustness  attack results (asymbp-eval) -> robustness.csv, gains over bp, their tables
    figures   the figures, registered in FIGURES
    cli       asymbp-aggregate (also `python -m asymbp.report`) and the names of its files
    claims    verdicts on the paper's four claims, docs/RESULTS.md
    example   a generated sweep with known numbers (the docs' example, the tests' fixture)

Nothing is imported here, so that `import asymbp.report.read` does not load matplotlib.
"""
