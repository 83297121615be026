# Reference values for multivariate and multilevel models (spatialmeta.meta_analysis.multilevel):
# metafor's rma.mv with `random = ~ inner | outer` structures (CS, HCS, UN, AR, DIAG), a known
# sampling covariance V, the Wald test of moderators (QM), I^2 per level (metafor FAQ's
# formula for multilevel models), the BLUPs of the random effects (ranef) and the profile
# likelihood intervals of the variance components (confint). Inputs stored beside outputs.
# Run from the repository root:  Rscript tests/reference/make_multivariate_reference.R
suppressPackageStartupMessages({
  library(metafor)
  library(jsonlite)
})
num <- function(x) as.numeric(x)
r15 <- function(x) signif(x, 15)

# metafor FAQ, "I^2 for multilevel and multivariate models": the share of each variance
# component in the total, with the 'typical' sampling variance (k - p) / tr(P) under W = V^-1
i2_levels <- function(fit) {
  W <- solve(fit$V)
  X <- model.matrix(fit)
  P <- W - W %*% X %*% solve(t(X) %*% W %*% X) %*% t(X) %*% W
  100 * fit$sigma2 / (sum(fit$sigma2) + (fit$k - fit$p) / sum(diag(P)))
}

structured <- function(name, fit, inner, outer, V, mods) {
  list(name = name, struct = fit$struct[1], yi = num(fit$yi), V = unname(as.matrix(V)),
       inner = as.character(inner), outer = as.character(outer),
       inner_levels = levels(factor(inner)), mods = unname(mods), method = fit$method,
       tau2 = num(fit$tau2), rho = num(fit$rho), beta = num(fit$beta), se = num(fit$se),
       zval = num(fit$zval), pval = num(fit$pval), ci_lb = num(fit$ci.lb),
       ci_ub = num(fit$ci.ub), QE = num(fit$QE), QEp = num(fit$QEp), QM = num(fit$QM),
       QMp = num(fit$QMp), logLik = num(logLik(fit)))
}

# Berkey et al. (1998): two outcomes (PD, AL) per trial, V from the reported covariances
data(dat.berkey1998, package = "metadat")
b <- dat.berkey1998
b$yi <- r15(b$yi); b$v1i <- r15(b$v1i); b$v2i <- r15(b$v2i)
Vb <- bldiag(lapply(split(b[, c("v1i", "v2i")], b$trial), as.matrix))
Xb <- model.matrix(~ outcome - 1, data = b)
berkey <- lapply(c("UN", "CS", "HCS", "DIAG"), function(s) {
  fit <- rma.mv(yi, Vb, mods = ~ outcome - 1, random = ~ outcome | trial, struct = s, data = b)
  structured(paste0("berkey1998_", s), fit, b$outcome, b$trial, Vb, Xb)
})
fitml <- rma.mv(yi, Vb, mods = ~ outcome - 1, random = ~ outcome | trial, struct = "UN",
                data = b, method = "ML")
berkey[[length(berkey) + 1]] <- structured("berkey1998_UN_ML", fitml, b$outcome, b$trial, Vb, Xb)
# with an intercept and a moderator (QM on one df)
fitm <- rma.mv(yi, Vb, mods = ~ outcome + I(year - 1983), random = ~ outcome | trial,
               struct = "UN", data = b)
berkey[[length(berkey) + 1]] <- structured("berkey1998_UN_year", fitm, b$outcome, b$trial, Vb,
                                           model.matrix(~ outcome + I(year - 1983), data = b))

# Ishak et al. (2007): mean change at up to four time points per study, AR(1) over time
data(dat.ishak2007, package = "metadat")
ish <- reshape(dat.ishak2007, direction = "long", idvar = "study", v.names = c("yi", "vi"),
               varying = list(c(2, 4, 6, 8), c(3, 5, 7, 9)))
ish <- ish[!is.na(ish$yi), ]
ish <- ish[order(ish$study, ish$time), ]
ish$yi <- r15(ish$yi); ish$vi <- r15(ish$vi)
Xi <- model.matrix(~ factor(time) - 1, data = ish)
# sampling errors autocorrelated over time within a study (phi = 0.97, metafor's example)
Vi <- r15(vcalc(vi, cluster = study, time1 = time, phi = 0.97, data = ish))
fit_ar <- rma.mv(yi, Vi, mods = ~ factor(time) - 1, random = ~ time | study, struct = "AR",
                 data = ish)
ar <- structured("ishak2007_AR", fit_ar, ish$time, ish$study, Vi, Xi)
fit_hcs <- rma.mv(yi, Vi, mods = ~ factor(time) - 1, random = ~ time | study, struct = "HCS",
                  data = ish)
hcs <- structured("ishak2007_HCS", fit_hcs, ish$time, ish$study, Vi, Xi)

# three-level models: QM, I^2 per level, BLUPs and profile intervals
data(dat.konstantopoulos2011, package = "metadat")
k <- dat.konstantopoulos2011
data(dat.assink2016, package = "metadat")
a <- dat.assink2016
extras <- function(name, fit, outer, inner, mods = NULL) {
  re <- ranef(fit)
  ci <- confint(fit)
  list(name = name, yi = num(fit$yi), vi = num(fit$vi), outer = as.character(outer),
       inner = as.character(inner), mods = if (is.null(mods)) NULL else num(mods),
       method = fit$method, sigma2 = num(fit$sigma2), QM = num(fit$QM), QMp = num(fit$QMp),
       I2 = num(i2_levels(fit)),
       ranef_outer = list(names = rownames(re[[1]]), pred = num(re[[1]]$intrcpt),
                          se = num(re[[1]]$se)),
       ranef_inner = list(names = rownames(re[[2]]), pred = num(re[[2]]$intrcpt),
                          se = num(re[[2]]$se)),
       blup = num(predict(fit)$pred),
       fitted = num(fitted(fit)),
       ci_sigma2 = lapply(ci[seq_along(fit$sigma2)], function(x) num(x$random[1, ])))
}
ml <- list(
  extras("konstantopoulos2011_REML", rma.mv(yi, vi, random = ~ 1 | district/school, data = k),
         k$district, k$school),
  extras("assink2016_REML_year", rma.mv(yi, vi, mods = ~ year, random = ~ 1 | study/esid,
                                        data = a), a$study, a$esid, a$year)
)

# what `spatialmeta pool --cluster study --structure 3level --rho 0.6 --mods deltype` fits:
# V imputed with r = 0.6 within studies, three levels, and CR2 tests clustered by study
suppressPackageStartupMessages(library(clubSandwich))
a$yi <- r15(a$yi); a$vi <- r15(a$vi)
Va <- impute_covariance_matrix(a$vi, cluster = a$study, r = 0.6)
fit_cli <- rma.mv(yi, Va, mods = ~ deltype, random = ~ 1 | study/esid, data = a)
ct <- coef_test(fit_cli, vcov = "CR2", cluster = a$study)
cli <- list(csv = a[, c("study", "esid", "yi", "vi", "deltype")], sigma2 = num(fit_cli$sigma2),
            beta = num(fit_cli$beta), se = num(fit_cli$se), QM = num(fit_cli$QM),
            QE = num(fit_cli$QE), robust_se = num(ct$SE), robust_df = num(ct$df_Satt),
            robust_p = num(ct$p_Satt), I2 = num(i2_levels(fit_cli)),
            ci_sigma2 = lapply(confint(fit_cli)[1:2], function(x) num(x$random[1, ])))

writeLines(toJSON(list(metafor = as.character(packageVersion("metafor")),
                       clubSandwich = as.character(packageVersion("clubSandwich")),
                       structured = c(berkey, list(ar, hcs)), multilevel = ml, cli = cli),
                  digits = NA, auto_unbox = TRUE, null = "null", matrix = "rowmajor"),
           "tests/reference/multivariate_reference.json")
