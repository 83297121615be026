# Reference values for cluster-robust inference (spatialmeta.meta_analysis.robust):
# clubSandwich's vcovCR (CR0, CR1, CR2) and coef_test (CR2, Satterthwaite) on metafor
# rma.uni fits, with the inputs (yi, vi, design, clusters) stored beside the outputs so
# that the test suite needs neither R nor metadat. Run from the repository root:
#   Rscript tests/reference/make_robust_reference.R
suppressPackageStartupMessages({
  library(metafor)
  library(clubSandwich)
  library(jsonlite)
})
num <- function(x) as.numeric(x)
case <- function(name, fit, cluster) {
  X <- model.matrix(fit)
  out <- list(name = name, method = fit$method, yi = num(fit$yi), vi = num(fit$vi),
              X = unname(lapply(seq_len(ncol(X)), function(j) num(X[, j]))),
              coef_names = colnames(X), cluster = as.character(cluster),
              beta = num(coef(fit)), tau2 = num(fit$tau2))
  for (type in c("CR0", "CR1", "CR2")) {
    V <- vcovCR(fit, cluster = cluster, type = type)
    out[[paste0("vcov_", type)]] <- unname(lapply(seq_len(ncol(V)), function(j) num(V[, j])))
  }
  ct <- coef_test(fit, vcov = "CR2", cluster = cluster, test = "Satterthwaite")
  out$se_CR2 <- num(ct$SE)
  out$tstat_CR2 <- num(ct$tstat)
  out$df_CR2 <- num(ct$df_Satt)
  out$p_CR2 <- num(ct$p_Satt)
  ct1 <- coef_test(fit, vcov = "CR1", cluster = cluster, test = c("naive-t", "Satterthwaite"))
  out$df_CR1 <- num(ct1$df_Satt)
  p <- ncol(X)
  which <- if (p > 1) 2:p else 1
  wt <- Wald_test(fit, constraints = constrain_zero(which), vcov = "CR2", cluster = cluster,
                  test = c("HTZ", "chi-sq"))
  htz <- wt[wt$test == "HTZ", ]
  out$wald_which <- as.integer(which)
  out$wald_F <- num(htz$Fstat)
  out$wald_delta <- num(htz$delta)
  out$wald_df_num <- num(htz$df_num)
  out$wald_df_denom <- num(htz$df_denom)
  out$wald_p <- num(htz$p_val)
  out$wald_chisq_F <- num(wt$Fstat[wt$test == "chi-sq"])
  if (p > 2) {
    wt2 <- Wald_test(fit, constraints = constrain_equal(3:p), vcov = "CR2", cluster = cluster,
                     test = "HTZ")
    out$equal_which <- as.integer(3:p)
    out$equal_F <- num(wt2$Fstat)
    out$equal_df_denom <- num(wt2$df_denom)
    out$equal_p <- num(wt2$p_val)
  }
  ci <- conf_int(fit, vcov = "CR2", cluster = cluster, level = 0.95)
  out$ci_lb_CR2 <- num(ci$CI_L)
  out$ci_ub_CR2 <- num(ci$CI_U)
  out
}
data(dat.konstantopoulos2011, package = "metadat")
k <- dat.konstantopoulos2011
data(dat.assink2016, package = "metadat")
a <- dat.assink2016
data(dat.bcg, package = "metadat")
b <- escalc("RR", ai = tpos, bi = tneg, ci = cpos, di = cneg, data = dat.bcg)
cases <- list(
  case("konstantopoulos2011_REML", rma(yi, vi, data = k), k$district),
  case("konstantopoulos2011_FE", rma(yi, vi, data = k, method = "FE"), k$district),
  case("assink2016_REML_mods", rma(yi, vi, mods = ~ year + deltype, data = a), a$study),
  case("bcg_DL_ablat", rma(yi, vi, mods = ~ ablat, data = b, method = "DL"), b$alloc)
)
# rma.mv fits (three-level models), clusters at the outer level
mv_case <- function(name, fit, outer, inner, cluster, mods = NULL) {
  ct <- coef_test(fit, vcov = "CR2", cluster = cluster, test = "Satterthwaite")
  V1 <- vcovCR(fit, cluster = cluster, type = "CR1")
  list(name = name, yi = num(fit$yi), vi = num(fit$vi), outer = as.character(outer),
       inner = as.character(inner), mods = if (is.null(mods)) NULL else num(mods),
       cluster = as.character(cluster), beta = num(coef(fit)), sigma2 = num(fit$sigma2),
       se_CR2 = num(ct$SE), df_CR2 = num(ct$df_Satt), p_CR2 = num(ct$p_Satt),
       vcov_CR1 = unname(lapply(seq_len(ncol(V1)), function(j) num(V1[, j]))))
}
mv_cases <- list(
  mv_case("konstantopoulos2011_mv", rma.mv(yi, vi, random = ~ 1 | district/school, data = k),
          k$district, k$school, k$district),
  mv_case("assink2016_mv_year", rma.mv(yi, vi, mods = ~ year, random = ~ 1 | study/esid, data = a),
          a$study, a$esid, a$study, a$year)
)
writeLines(toJSON(list(mv = mv_cases, clubSandwich = as.character(packageVersion("clubSandwich")),
                       metafor = as.character(packageVersion("metafor")), cases = cases),
                  digits = NA, auto_unbox = TRUE),
           "tests/reference/robust_reference.json")
