# Regenerate tests/reference/metafor_reference.json:
#
#   Rscript tests/reference/make_metafor_reference.R [out.json]
#
# Fits rma.uni (metafor defaults) to eleven metadat datasets for every tau^2
# estimator and both tests, and writes inputs and outputs as JSON. The Python
# test suite reads only the JSON, so it does not need R.
#
# Inputs are rounded to 15 significant digits *before* fitting, so R fits
# exactly the doubles that the JSON (and therefore Python) sees.

suppressPackageStartupMessages({
  library(metafor)
  library(jsonlite)
})

args <- commandArgs(trailingOnly = TRUE)
out <- if (length(args) >= 1) args[1] else "tests/reference/metafor_reference.json"

r15 <- function(x) as.numeric(sprintf("%.15g", x))

datasets <- list()
add <- function(name, dat, labels, measure) {
  keep <- !is.na(dat$yi) & !is.na(dat$vi)
  datasets[[name]] <<- list(
    yi = r15(as.numeric(dat$yi[keep])),
    vi = r15(as.numeric(dat$vi[keep])),
    labels = as.character(labels[keep]),
    measure = measure
  )
}

bcg <- escalc(measure = "RR", ai = tpos, bi = tneg, ci = cpos, di = cneg, data = dat.bcg)
add("bcg", bcg, paste0(bcg$author, ", ", bcg$year), "RR")

normand <- escalc(measure = "SMD", m1i = m1i, sd1i = sd1i, n1i = n1i,
                  m2i = m2i, sd2i = sd2i, n2i = n2i, data = dat.normand1999)
add("normand1999", normand, paste0(normand$source, " ", normand$study), "SMD")

hack <- dat.hackshaw1998
add("hackshaw1998", hack, paste0(hack$author, ", ", hack$year), "OR")

raud <- dat.raudenbush1985
add("raudenbush1985", raud, paste0(raud$author, ", ", raud$year), "SMD")

molloy <- escalc(measure = "ZCOR", ri = ri, ni = ni, data = dat.molloy2014)
add("molloy2014", molloy, paste0(molloy$authors, ", ", molloy$year), "ZCOR")

pritz <- escalc(measure = "PLO", xi = xi, ni = ni, data = dat.pritz1997)
add("pritz1997", pritz, as.character(pritz$authors), "PLO")

egger <- escalc(measure = "OR", ai = ai, n1i = n1i, ci = ci, n2i = n2i, data = dat.egger2001)
add("egger2001", egger, paste0(egger$study, ", ", egger$year), "OR")

collins <- escalc(measure = "OR", ai = pre.xti, n1i = pre.nti, ci = pre.xci, n2i = pre.nci,
                  data = dat.collins1985b)
add("collins1985b", collins, paste0(collins$author, ", ", collins$year), "OR")

hart <- escalc(measure = "IRR", x1i = x1i, t1i = t1i, x2i = x2i, t2i = t2i, data = dat.hart1999)
add("hart1999", hart, paste0(hart$study, ", ", hart$year), "IRR")

curtis <- escalc(measure = "ROM", m1i = m1i, sd1i = sd1i, n1i = n1i,
                 m2i = m2i, sd2i = sd2i, n2i = n2i, data = dat.curtis1998)
add("curtis1998", curtis, paste0(curtis$paper, "/", curtis$id), "ROM")

bangert <- dat.bangertdrowns2004
add("bangertdrowns2004", bangert, paste0(bangert$author, ", ", bangert$year), "SMD")

# Two synthetic cases: all effects identical (tau^2 = 0 boundary; with knha the
# scale factor is 0, so se = 0 and the t value is infinite), and a set on which
# metafor's Fisher scoring (REML) fails to converge within 100 iterations.
add("identical", data.frame(yi = rep(0.3, 5), vi = c(0.1, 0.2, 0.05, 0.3, 0.1)),
    paste("Study", 1:5), "effect")
add("nonconverge", data.frame(
  yi = c(0.08261642738960036, -0.0836928657239852, 0.3201442626110271, 1.2021720134250766,
         0.35659262874604614, 0.3587933684112218, -0.2850816888651169),
  vi = c(0.4160917840047291, 0.19808627083799438, 0.41135398347263985, 0.02748360355212342,
         0.28822989849691266, 0.33076353766256117, 0.6246221570113627)),
  paste("Study", 1:7), "effect")

# NA -> null; +-Inf -> "Inf"/"-Inf" (JSON has no infinity; Python's float() reads these).
num <- function(x) {
  if (is.null(x) || length(x) == 0 || is.na(x[1])) return(NA_real_)
  if (is.infinite(x[1])) return(if (x[1] > 0) "Inf" else "-Inf")
  as.numeric(x[1])
}

fit_one <- function(name, method, test, level = 95, weights = NULL) {
  d <- datasets[[name]]
  warns <- character(0)
  fit <- function() {
    if (is.null(weights)) {
      rma(yi = d$yi, vi = d$vi, method = method, test = test, level = level)
    } else {
      rma(yi = d$yi, vi = d$vi, weights = weights, method = method, test = test,
          level = level)
    }
  }
  res <- tryCatch(
    withCallingHandlers(fit(), warning = function(w) {
      warns <<- c(warns, conditionMessage(w))
      invokeRestart("muffleWarning")
    }),
    error = function(e) e
  )
  row <- list(dataset = name, method = method, test = test, level = level,
              weights = if (is.null(weights)) NULL else weights,
              warnings = as.list(warns))
  if (inherits(res, "error")) {
    row$error <- conditionMessage(res)
    return(row)
  }
  pr <- predict(res)
  c(row, list(
    k = res$k,
    estimate = num(res$beta), se = num(res$se), zval = num(res$zval),
    pval = num(res$pval), ci_lb = num(res$ci.lb), ci_ub = num(res$ci.ub),
    tau2 = num(res$tau2), se_tau2 = num(res$se.tau2),
    I2 = num(res$I2), H2 = num(res$H2), QE = num(res$QE), QEp = num(res$QEp),
    pi_lb = num(pr$pi.lb), pi_ub = num(pr$pi.ub),
    weights_pct = as.numeric(weights(res))
  ))
}

methods <- c("EE", "DL", "HE", "HS", "SJ", "ML", "REML", "EB", "PM")
tests <- c("z", "knha")
fits <- list()
for (name in names(datasets)) {
  for (method in methods) {
    for (test in tests) {
      fits[[length(fits) + 1]] <- fit_one(name, method, test)
    }
  }
}
# A few extra settings: a non-default level and user-given weights.
for (method in c("EE", "DL", "REML", "PM")) {
  fits[[length(fits) + 1]] <- fit_one("bcg", method, "z", level = 90)
  fits[[length(fits) + 1]] <- fit_one("bcg", method, "knha", level = 80)
  w <- r15(sqrt(1 / datasets[["molloy2014"]]$vi))
  fits[[length(fits) + 1]] <- fit_one("molloy2014", method, "z", weights = w)
  fits[[length(fits) + 1]] <- fit_one("molloy2014", method, "knha", weights = w)
}

doc <- list(
  generated_by = "tests/reference/make_metafor_reference.R",
  R_version = R.version.string,
  metafor_version = as.character(packageVersion("metafor")),
  metadat_version = as.character(packageVersion("metadat")),
  datasets = datasets,
  fits = fits
)
writeLines(toJSON(doc, digits = NA, auto_unbox = TRUE, na = "null", null = "null",
                  pretty = TRUE), out)
cat("wrote", length(fits), "fits to", out, "\n")
