package points

import (
	"context"
	"fmt"

	"github.com/jackc/pgx/v5"
)

// TaskFigures are one task's points figures (CONTRACT.md issue 16 "Report").
type TaskFigures struct {
	Task string `json:"task"`
	// Issued: points of accepted grants; Expired: taken by expiry; Spent: issued less
	// what is left in the lots and what expired (a spend debits lots oldest first, so
	// it is attributed to the tasks whose lots it used).
	Issued  int64 `json:"issued"`
	Spent   int64 `json:"spent"`
	Expired int64 `json:"expired"`
	// ConsumptionRate is spent ÷ issued (0 when nothing was issued).
	ConsumptionRate float64 `json:"consumption_rate"`
	// Refused: grants refused at the ceiling (points_refusals).
	Refused int64 `json:"refused_grants"`
}

// Report is the points figures by task and in total.
type Report struct {
	Tasks []TaskFigures `json:"tasks"`
	Total TaskFigures   `json:"total"`
}

// Report reads the figures from the record.
func (s *Service) Report(ctx context.Context) (*Report, error) {
	rows, err := s.pg.Query(ctx, `SELECT t.id,
		coalesce((SELECT sum(amount) FROM points_lots l WHERE l.task_id = t.id), 0),
		coalesce((SELECT sum(remaining) FROM points_lots l WHERE l.task_id = t.id), 0),
		coalesce((SELECT -sum(delta) FROM points_ledger g WHERE g.task_id = t.id AND g.kind = 'expire'), 0),
		(SELECT count(*) FROM points_refusals r WHERE r.task_id = t.id)
		FROM points_tasks t ORDER BY t.id`)
	if err != nil {
		return nil, fmt.Errorf("points report: %w", err)
	}
	figs, err := pgx.CollectRows(rows, func(r pgx.CollectableRow) (TaskFigures, error) {
		var f TaskFigures
		var left int64
		err := r.Scan(&f.Task, &f.Issued, &left, &f.Expired, &f.Refused)
		f.Spent = f.Issued - left - f.Expired
		return f, err
	})
	if err != nil {
		return nil, fmt.Errorf("points report: %w", err)
	}
	rep := &Report{Tasks: append([]TaskFigures{}, figs...), Total: TaskFigures{Task: "*"}}
	for i := range rep.Tasks {
		f := &rep.Tasks[i]
		f.ConsumptionRate = rate(f.Spent, f.Issued)
		rep.Total.Issued += f.Issued
		rep.Total.Spent += f.Spent
		rep.Total.Expired += f.Expired
		rep.Total.Refused += f.Refused
	}
	rep.Total.ConsumptionRate = rate(rep.Total.Spent, rep.Total.Issued)
	return rep, nil
}

func rate(a, b int64) float64 {
	if b == 0 {
		return 0
	}
	return float64(a) / float64(b)
}
