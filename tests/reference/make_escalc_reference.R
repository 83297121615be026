# Regenerate tests/reference/escalc_reference.json:
#
#   Rscript tests/reference/make_escalc_reference.R [out.json]
#
# Computes metafor::escalc effect sizes (yi) and sampling variances (vi) for
# metadat datasets and a few small hand-made sets (zero cells, extreme sample
# sizes, boundary correlations), and writes the inputs and outputs as JSON with
# 17 significant digits, so every double round-trips exactly. The Python test
# suite (tests/meta_analysis/test_effect_sizes.py) reads only the JSON; it does
# not need R.

suppressPackageStartupMessages({
  library(metafor)
  library(jsonlite)
})

args <- commandArgs(trailingOnly = TRUE)
out <- if (length(args) >= 1) args[1] else "tests/reference/escalc_reference.json"

# A numeric vector as a JSON array with 17 significant digits (jsonlite's own
# formatting stops at 15). NA -> null; +-Inf -> "Inf"/"-Inf" (JSON has no
# infinity; Python's float() reads these).
num17 <- function(x) {
  x <- as.numeric(x)
  txt <- ifelse(is.na(x), "null",
                ifelse(is.infinite(x), ifelse(x > 0, '"Inf"', '"-Inf"'),
                       sprintf("%.17g", x)))
  structure(paste0("[", paste(txt, collapse = ", "), "]"), class = "json")
}

cases <- list()

# One escalc call; `inputs` is a named list of numeric vectors passed to escalc
# under those argument names, `options` holds add/to when they are not defaults.
add_case <- function(name, source, measure, inputs, labels, options = list()) {
  res <- do.call(escalc, c(list(measure = measure), inputs, options))
  cases[[length(cases) + 1]] <<- list(
    name = name,
    source = source,
    measure = measure,
    options = if (length(options)) options else setNames(list(), character(0)),
    inputs = lapply(inputs, num17),
    labels = as.character(labels),
    yi = num17(res$yi),
    vi = num17(res$vi)
  )
}

# --- metadat datasets -------------------------------------------------------

bcg <- dat.bcg
bcg_in <- list(ai = bcg$tpos, bi = bcg$tneg, ci = bcg$cpos, di = bcg$cneg)
bcg_lab <- paste0(bcg$author, ", ", bcg$year)
for (m in c("RR", "OR", "RD", "PETO")) {
  add_case(paste0("bcg_", m), "dat.bcg", m, bcg_in, bcg_lab)
}
# the same tables given as ai, ci and the row totals n1i, n2i
add_case("bcg_RR_totals", "dat.bcg", "RR",
         list(ai = bcg$tpos, ci = bcg$cpos, n1i = bcg$tpos + bcg$tneg,
              n2i = bcg$cpos + bcg$cneg), bcg_lab)
# no zero cells: every `to` but "all" leaves the tables as they are
for (to in c("all", "if0all", "none")) {
  add_case(paste0("bcg_OR_", to), "dat.bcg", "OR", bcg_in, bcg_lab, list(to = to))
}

nor <- dat.normand1999
nor_in <- list(m1i = nor$m1i, sd1i = nor$sd1i, n1i = nor$n1i,
               m2i = nor$m2i, sd2i = nor$sd2i, n2i = nor$n2i)
nor_lab <- paste0(nor$source, " ", nor$study)
for (m in c("MD", "SMD", "SMDH", "ROM")) {
  add_case(paste0("normand1999_", m), "dat.normand1999", m, nor_in, nor_lab)
}

hart <- dat.hart1999
hart_in <- list(x1i = hart$x1i, t1i = hart$t1i, x2i = hart$x2i, t2i = hart$t2i)
hart_lab <- paste0(hart$study, ", ", hart$year)
for (m in c("IRR", "IRD")) {
  add_case(paste0("hart1999_", m), "dat.hart1999", m, hart_in, hart_lab)
}

pritz <- dat.pritz1997
pritz_in <- list(xi = pritz$xi, ni = pritz$ni)
pritz_lab <- as.character(pritz$authors)
for (m in c("PR", "PLO", "PAS", "PFT")) {
  add_case(paste0("pritz1997_", m), "dat.pritz1997", m, pritz_in, pritz_lab)
}

mol <- dat.molloy2014
mol_in <- list(ri = mol$ri, ni = mol$ni)
mol_lab <- paste0(mol$authors, ", ", mol$year)
for (m in c("COR", "ZCOR")) {
  add_case(paste0("molloy2014_", m), "dat.molloy2014", m, mol_in, mol_lab)
}

# --- hand-made sets ---------------------------------------------------------

# 2x2 tables with zero cells in every position, a double-zero study (ai = ci = 0)
# and an all-events study (bi = di = 0), under every `to` and a few `add` values.
zero <- list(ai = c(0, 5, 3, 10, 0, 7, 12),
             bi = c(10, 5, 0, 10, 12, 0, 30),
             ci = c(4, 0, 2, 6, 0, 9, 8),
             di = c(6, 10, 8, 14, 9, 0, 25))
zero_lab <- paste("Zero", seq_along(zero$ai))
for (m in c("RR", "OR", "RD", "PETO")) {
  for (to in c("only0", "all", "if0all", "none")) {
    add_case(paste0("zero2x2_", m, "_", to), "hand-made", m, zero, zero_lab,
             list(to = to))
  }
  add_case(paste0("zero2x2_", m, "_add1"), "hand-made", m, zero, zero_lab,
           list(add = 1))
  add_case(paste0("zero2x2_", m, "_add0"), "hand-made", m, zero, zero_lab,
           list(add = 0))
  add_case(paste0("zero2x2_", m, "_all_add0.25"), "hand-made", m, zero, zero_lab,
           list(add = 0.25, to = "all"))
}
# if0all on tables without a zero cell adds nothing
nozero <- list(ai = c(3, 5, 12), bi = c(10, 5, 30), ci = c(4, 1, 8), di = c(6, 10, 25))
for (m in c("RR", "OR")) {
  add_case(paste0("nozero2x2_", m, "_if0all"), "hand-made", m, nozero,
           paste("Table", 1:3), list(to = "if0all"))
}

# person-time data with zero events
inc <- list(x1i = c(0, 3, 4, 0, 11), t1i = c(100, 120, 90, 50, 1000.5),
            x2i = c(2, 0, 5, 0, 17), t2i = c(80, 110, 95, 60, 999.25))
inc_lab <- paste("Cohort", 1:5)
for (m in c("IRR", "IRD")) {
  for (to in c("only0", "all", "if0all", "none")) {
    add_case(paste0("zeroinc_", m, "_", to), "hand-made", m, inc, inc_lab,
             list(to = to))
  }
  add_case(paste0("zeroinc_", m, "_add1"), "hand-made", m, inc, inc_lab, list(add = 1))
}

# proportions with xi = 0 and xi = ni; PAS and PFT default to add = 0
prop <- list(xi = c(0, 5, 10, 3, 1), ni = c(10, 10, 10, 20, 1000))
prop_lab <- paste("Sample", 1:5)
for (m in c("PR", "PLO", "PAS", "PFT")) {
  for (to in c("only0", "all", "if0all", "none")) {
    add_case(paste0("zeroprop_", m, "_", to), "hand-made", m, prop, prop_lab,
             list(to = to))
  }
  add_case(paste0("zeroprop_", m, "_add0.5"), "hand-made", m, prop, prop_lab,
           list(add = 0.5))
}

# means: smallest total n for SMD (4), very large n (the gamma ratio), negative
# differences, non-integer summary values
means <- list(m1i = c(1, 10.5, -3.25, 100, 0.001),
              sd1i = c(1, 2.5, 4, 15, 0.0004),
              n1i = c(2, 500, 12, 100000, 3),
              m2i = c(0, 12, -1, 98, 0.0015),
              sd2i = c(2, 3, 1.5, 16, 0.0002),
              n2i = c(2, 600, 7, 120000, 3))
means_lab <- paste("Trial", 1:5)
for (m in c("MD", "SMD", "SMDH")) {
  add_case(paste0("means_", m), "hand-made", m, means, means_lab)
}
rom <- list(m1i = c(1, 10.5, 3.25, 100, 0.001, -4),
            sd1i = c(1, 2.5, 4, 15, 0.0004, 1),
            n1i = c(2, 500, 12, 100000, 3, 10),
            m2i = c(0.5, 12, 1, 98, 0.0015, -5),
            sd2i = c(2, 3, 1.5, 16, 0.0002, 2),
            n2i = c(2, 600, 7, 120000, 3, 11))
add_case("means_ROM", "hand-made", "ROM", rom, paste("Trial", 1:6))

# correlations at and near the boundary
corr <- list(ri = c(-1, -0.99, 0, 0.5, 0.999999, 1), ni = c(10, 4, 5, 1000, 50, 20))
corr_lab <- paste("Sample", 1:6)
add_case("corr_COR", "hand-made", "COR", corr, corr_lab)
add_case("corr_ZCOR", "hand-made", "ZCOR", corr, corr_lab)

doc <- list(
  generated_by = "tests/reference/make_escalc_reference.R",
  R_version = R.version.string,
  metafor_version = as.character(packageVersion("metafor")),
  metadat_version = as.character(packageVersion("metadat")),
  jsonlite_version = as.character(packageVersion("jsonlite")),
  cases = cases
)
writeLines(toJSON(doc, auto_unbox = TRUE, json_verbatim = TRUE, null = "null",
                  digits = NA, pretty = TRUE), out)
cat("wrote", length(cases), "cases to", out, "\n")
