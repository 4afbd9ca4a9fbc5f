// SPDX-FileCopyrightText: 2026 The clearance authors
// SPDX-License-Identifier: Apache-2.0

package main

func init() {
	measurements = append(measurements,
		struct {
			group string
			run   func(*bench) error
		}{"propose", (*bench).propose},
		struct {
			group string
			run   func(*bench) error
		}{"review", (*bench).review},
	)
}

// propose: clearancectl policy propose from 10 000 journal records (50
// runs, 200 destinations), parsing included (internal/ctl's
// BenchmarkPropose10k).
func (b *bench) propose() error {
	metrics, err := goBench("./internal/ctl", "BenchmarkPropose10k", "20x")
	if err != nil {
		return err
	}
	return reportMetrics(metrics, []metric{
		{"Propose10k/propose_ms_10k_records", "propose_ms_10k_records", "ms"},
	})
}

// review: one refresh of clearancectl review's full screen with 1 000
// pending requests on 50 hubs: grouping, keeping the selection, drawing a
// 200x50 frame (internal/ctl's BenchmarkReviewRender1k).
func (b *bench) review() error {
	metrics, err := goBench("./internal/ctl", "BenchmarkReviewRender1k", "200x")
	if err != nil {
		return err
	}
	return reportMetrics(metrics, []metric{
		{"ReviewRender1k/review_render_ms_1k_pending", "review_render_ms_1k_pending", "ms"},
	})
}
