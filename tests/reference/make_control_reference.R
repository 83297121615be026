# Regenerate tests/reference/control_reference.json:
#
#   Rscript tests/reference/make_control_reference.R
#
# metafor's rma.uni with a non-default control, list(threshold = 1e-8, maxiter = 1000,
# stepadj = 0.5), for ML, REML and EB on four datasets of metafor_reference.json (read
# with jsonlite, so R fits the doubles Python sees): tau2, se.tau2, the estimate and its
# se; and leave1out() of that fit (which refits with the fit's control). Numbers with 17 significant digits.
suppressMessages(library(metafor))
library(jsonlite)
here <- "tests/reference"
ds <- fromJSON(file.path(here, "metafor_reference.json"), simplifyVector = FALSE)$datasets
ctrl <- list(threshold = 1e-8, maxiter = 1000, stepadj = 0.5)
out <- list()
for (name in c("bcg", "hackshaw1998", "raudenbush1985", "molloy2014")) {
  yi <- unlist(ds[[name]]$yi); vi <- unlist(ds[[name]]$vi)
  for (method in c("ML", "REML", "EB")) {
    f <- rma(yi, vi, method = method, control = ctrl)
    l <- leave1out(f)
    out[[length(out) + 1]] <- list(
      dataset = name, method = method, control = ctrl,
      tau2 = f$tau2, se_tau2 = f$se.tau2, estimate = as.numeric(f$b), se = f$se,
      leave1out = list(tau2 = l$tau2, estimate = l$estimate, se = l$se)
    )
  }
}
res <- list(generated_by = "tests/reference/make_control_reference.R",
            metafor_version = as.character(packageVersion("metafor")),
            R_version = R.version.string, fits = out)
writeLines(toJSON(res, auto_unbox = TRUE, digits = I(17), na = "null"),
           file.path(here, "control_reference.json"))
cat(length(out), "fits\n")
