# Reference effect sizes for the corpus loader's column aliases: metafor's escalc on the
# shared .rda files (loaded by R's own load(), not by the rdata package the loader uses).
# Run from the repository root, with ../shared beside it:
#   Rscript tests/reference/make_corpus_alias_reference.R
library(metafor)
library(jsonlite)
root <- "../shared/data/meta_analysis/metadat/data"
read_rda <- function(name) {
  env <- new.env()
  load(file.path(root, paste0(name, ".rda")), envir = env)
  get(ls(env)[1], envir = env)
}
out <- list()
keep <- function(key, es) {
  ok <- is.finite(es$yi) & is.finite(es$vi) & es$vi > 0
  out[[key]] <<- list(yi = as.numeric(es$yi[ok]), vi = as.numeric(es$vi[ok]))
}
d <- read_rda("dat.furukawa2003")
keep("metadat/dat.furukawa2003", escalc("SMD", m1i = Me, sd1i = Se, n1i = Ne, m2i = Mc, sd2i = Sc, n2i = Nc, data = d))
d <- read_rda("dat.spooner2002")
keep("metadat/dat.spooner2002", escalc("MD", m1i = Me, sd1i = Se, n1i = Ne, m2i = Mc, sd2i = Sc, n2i = Nc, data = d))
d <- read_rda("dat.nakagawa2007")
keep("metadat/dat.nakagawa2007", escalc("ZCOR", ri = Correlation, ni = SampleSize, data = d))
d <- read_rda("dat.crisafulli2020")
keep("metadat/dat.crisafulli2020", escalc("PLO", xi = cases, ni = total, data = d))
d <- read_rda("dat.dorn2007")
keep("metadat/dat.dorn2007", escalc("RR", ai = x.a, n1i = n.a, ci = x.p, n2i = n.p, data = d))
d <- read_rda("dat.axfors2021")
keep("metadat/dat.axfors2021", escalc("OR", ai = hcq_arm_event, n1i = hcq_arm_total, ci = control_arm_event, n2i = control_arm_total, data = d))
d <- read_rda("dat.higgins2008")
keep("metadat/dat.higgins2008", escalc("OR", ai = resp.halo, bi = fail.halo, ci = resp.plac, di = fail.plac, data = d))
writeLines(toJSON(out, digits = I(17), auto_unbox = TRUE), "tests/reference/corpus_alias_reference.json")
