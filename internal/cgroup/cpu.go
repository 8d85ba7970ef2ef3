package cgroup

import (
	"fmt"
	"path"
	"strings"
)

// defaultPeriod is the CFS period in microseconds when cpu.max gives only a quota.
const defaultPeriod = 100000

// cpuQuota returns the tightest CPU quota on the walk from c.Dir up to c.Mount, or nil.
func (r reader) cpuQuota(c Controller, l *Limits) *CPUQuota {
	if c.Dir == "" {
		return nil
	}
	var best *CPUQuota
	walk(c, func(dir string) {
		var q *CPUQuota
		var err error
		if c.Version == V1 {
			q, err = r.cpuQuotaV1(dir, l)
		} else {
			q, err = r.cpuQuotaV2(dir, l)
		}
		if err != nil {
			l.note("ignoring %v", err)
			return
		}
		if q != nil && (best == nil || less(q.Quota, q.Period, best.Quota, best.Period)) {
			best = q
		}
	})
	return best
}

// cpuQuotaV1 reads cpu.cfs_quota_us (-1 = none) and cpu.cfs_period_us.
func (r reader) cpuQuotaV1(dir string, l *Limits) (*CPUQuota, error) {
	qf := path.Join(dir, "cpu.cfs_quota_us")
	qs, ok := r.value(qf, l)
	if !ok {
		return nil, nil
	}
	quota, err := parseInt(qs)
	if err != nil {
		return nil, fmt.Errorf("%s: %w", qf, err)
	}
	if quota <= 0 {
		return nil, nil
	}
	pf := path.Join(dir, "cpu.cfs_period_us")
	ps, ok := r.value(pf, l)
	if !ok {
		return nil, fmt.Errorf("%s: quota %d without a readable %s", qf, quota, pf)
	}
	period, err := parseInt(ps)
	if err != nil {
		return nil, fmt.Errorf("%s: %w", pf, err)
	}
	if period <= 0 {
		return nil, fmt.Errorf("%s: period %d is not positive", pf, period)
	}
	return &CPUQuota{Quota: quota, Period: period, Version: V1, File: qf}, nil
}

// cpuQuotaV2 reads cpu.max: "max 100000" (none), "150000 100000" or just "150000".
func (r reader) cpuQuotaV2(dir string, l *Limits) (*CPUQuota, error) {
	f := path.Join(dir, "cpu.max")
	s, ok := r.value(f, l)
	if !ok {
		return nil, nil
	}
	fields := strings.Fields(s)
	if len(fields) == 0 || len(fields) > 2 {
		return nil, fmt.Errorf("%s: parsing %q: want \"QUOTA PERIOD\"", f, s)
	}
	period := int64(defaultPeriod)
	if len(fields) == 2 {
		p, err := parseInt(fields[1])
		if err != nil {
			return nil, fmt.Errorf("%s: %w", f, err)
		}
		if p <= 0 {
			return nil, fmt.Errorf("%s: period %d is not positive", f, p)
		}
		period = p
	}
	if fields[0] == "max" {
		return nil, nil
	}
	quota, err := parseInt(fields[0])
	if err != nil {
		return nil, fmt.Errorf("%s: %w", f, err)
	}
	if quota <= 0 {
		return nil, fmt.Errorf("%s: quota %d is not positive", f, quota)
	}
	return &CPUQuota{Quota: quota, Period: period, Version: V2, File: f}, nil
}
