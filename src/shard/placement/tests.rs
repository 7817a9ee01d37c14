use super::*;

fn mask(cpus: &[usize]) -> CpuList {
    CpuList::new(cpus.iter().copied())
}

#[test]
fn cpu_lists_print_as_the_kernel_does() {
    assert_eq!(mask(&[0, 1, 2, 3, 6]).to_string(), "0-3,6");
    assert_eq!(mask(&[5]).to_string(), "5");
    assert_eq!(mask(&[3, 1, 1, 8, 9]).to_string(), "1,3,8-9");
    assert_eq!(mask(&[]).to_string(), "none");
}

#[test]
fn by_default_one_shard_per_cpu_of_the_mask_in_order() {
    let p = Placement::plan(None, None, &mask(&[2, 3, 5])).unwrap();
    assert_eq!(p.cpus(), &[2, 3, 5]);
    assert_eq!(p.shards().get(), 3);
    assert_eq!(p.cpu(2), Some(5));
    assert_eq!(p.cpu(3), None);
    assert_eq!(p.warning(), None);

    let p = Placement::plan(Some(2), None, &mask(&[2, 3, 5])).unwrap();
    assert_eq!(p.cpus(), &[2, 3]);
}

#[test]
fn more_shards_than_cpus_share_them_with_a_warning() {
    let p = Placement::plan(Some(5), None, &mask(&[0, 1])).unwrap();
    assert_eq!(p.cpus(), &[0, 1, 0, 1, 0]);
    let w = p.warning().unwrap();
    assert!(w.contains("5 shards on 2 CPUs"), "{w}");
    assert!(w.contains("0-1"), "{w}");
}

#[test]
fn listed_cpus_are_used_as_given_when_the_mask_allows_them() {
    let allowed = mask(&[0, 1, 2, 3]);
    let p = Placement::plan(None, Some(&[3, 1]), &allowed).unwrap();
    assert_eq!(p.cpus(), &[3, 1]);
    let p = Placement::plan(Some(2), Some(&[3, 1]), &allowed).unwrap();
    assert_eq!(p.cpus(), &[3, 1]);

    let e = Placement::plan(None, Some(&[1, 7]), &allowed).unwrap_err();
    assert!(
        matches!(e, PlacementError::NotAllowed { cpu: 7, .. }),
        "{e}"
    );
    assert_eq!(
        e.to_string(),
        "CPU 7 is not in this process's CPU affinity mask (0-3)"
    );
    let e = Placement::plan(None, Some(&[1, 1]), &allowed).unwrap_err();
    assert!(matches!(e, PlacementError::Duplicate { cpu: 1 }), "{e}");
    let e = Placement::plan(Some(3), Some(&[1, 2]), &allowed).unwrap_err();
    assert!(e.to_string().contains("shards = 3"), "{e}");
    let e = Placement::plan(None, Some(&[MAX_CPUS]), &allowed).unwrap_err();
    assert!(matches!(e, PlacementError::OutOfRange { .. }), "{e}");
    let e = Placement::plan(None, Some(&[]), &allowed).unwrap_err();
    assert!(matches!(e, PlacementError::ShardCount(0)), "{e}");
}

#[test]
fn shard_counts_outside_the_cid_layout_are_refused() {
    let allowed = mask(&[0]);
    for n in [0, MAX_SHARDS + 1] {
        let e = Placement::plan(Some(n), None, &allowed).unwrap_err();
        assert!(matches!(e, PlacementError::ShardCount(m) if m == n), "{e}");
    }
    assert!(Placement::plan(Some(MAX_SHARDS), None, &allowed).is_ok());
    assert!(matches!(
        Placement::plan(None, None, &mask(&[])),
        Err(PlacementError::NoCpus)
    ));
}

/// Pins a fresh thread (never the test harness's) to each CPU of the mask and reads back the
/// thread's mask and the CPU it runs on.
#[test]
fn pinning_a_thread_confines_it_to_that_cpu() {
    let allowed = allowed_cpus().unwrap();
    assert!(!allowed.is_empty());
    let p = Placement::plan(None, None, &allowed).unwrap();
    for (shard, &cpu) in p.cpus().iter().enumerate() {
        let (mask_after, running_on) = std::thread::spawn(move || {
            pin_current_thread(shard, cpu).unwrap();
            (allowed_cpus().unwrap(), current_cpu())
        })
        .join()
        .unwrap();
        assert_eq!(mask_after, CpuList::new([cpu]));
        assert_eq!(running_on, Some(cpu));
    }
}

#[test]
fn pinning_to_a_cpu_that_does_not_exist_names_it() {
    let e = std::thread::spawn(|| pin_current_thread(4, MAX_CPUS - 1))
        .join()
        .unwrap()
        .unwrap_err();
    assert!(matches!(e, PlacementError::Pin { shard: 4, cpu, .. } if cpu == MAX_CPUS - 1));
    assert!(
        e.to_string()
            .starts_with("cannot pin shard 4 to CPU 1023: "),
        "{e}"
    );
    let e = pin_current_thread(0, MAX_CPUS).unwrap_err();
    assert!(matches!(e, PlacementError::OutOfRange { .. }), "{e}");
}
