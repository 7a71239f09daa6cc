# Figures: each is a named target (`snakemake fig1`) and a path under results/figures/.
# The plotting modules and the paper's claims (claims.yaml: titles, claims, the paper's
# numbers) are inputs, so editing them reruns plotting and nothing else.

ANALYSIS = REPO / "workflow" / "guestio" / "analysis"


rule figure:
    input:
        csv=lambda w: f"{RESULTS}/tables/{PLAN.figures[w.fig]}.csv",
        provenance=lambda w: f"{RESULTS}/tables/{PLAN.figures[w.fig]}.provenance.json",
        code=[ANALYSIS / name for name in ("figures.py", "figure_data.py", "figure_drawing.py", "stats.py", "claims.py",
                                           "claim_model.py", "claims_check.py", "placeholders.py", "claims.yaml",
                                           "measurements.py")],
    output:
        pdf=f"{RESULTS}/figures/{{fig}}.pdf",
        png=f"{RESULTS}/figures/{{fig}}.png",
        summary=f"{RESULTS}/figures/{{fig}}-ratios.csv",
    wildcard_constraints:
        fig="|".join(PLAN.figures) or "(?!)",
    params:
        figure=lambda w: w.fig,
        seed=config["figures"]["seed"],
        defaults=PLAN.condition_defaults,
    log:
        f"{RESULTS}/figures/{{fig}}.log",
    conda:
        CONDA_ENV
    script:
        "../scripts/plot_figure.py"


rule fig1:
    input:
        PLAN.figure_files("fig1"),


rule fig2:
    input:
        PLAN.figure_files("fig2"),


rule fig6:
    input:
        PLAN.figure_files("fig6"),
