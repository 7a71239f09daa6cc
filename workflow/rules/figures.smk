# Figures: each is a named target (`snakemake fig1`) and a path under results/figures/.
# The plotting modules are inputs, so editing them reruns plotting and nothing else.

rule figure:
    input:
        csv=lambda w: f"{RESULTS}/tables/{FIGURES[w.fig]}.csv",
        provenance=lambda w: f"{RESULTS}/tables/{FIGURES[w.fig]}.provenance.json",
        code=[REPO / "workflow" / "guestio" / "analysis" / "figures.py", REPO / "workflow" / "guestio" / "analysis" / "stats.py"],
    output:
        pdf=f"{RESULTS}/figures/{{fig}}.pdf",
        png=f"{RESULTS}/figures/{{fig}}.png",
        summary=f"{RESULTS}/figures/{{fig}}-ratios.csv",
    wildcard_constraints:
        fig="|".join(FIGURES),
    params:
        figure=lambda w: w.fig,
        seed=config["figures"]["seed"],
    log:
        f"{RESULTS}/figures/{{fig}}.log",
    conda:
        CONDA_ENV
    script:
        "../scripts/plot_figure.py"


rule fig1:
    input:
        figure_files("fig1"),


rule fig2:
    input:
        figure_files("fig2"),


rule fig6:
    input:
        figure_files("fig6"),
